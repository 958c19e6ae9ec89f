-- The identifier look-up of entity resolution is planned for its values
-- on every call.  A pool connection lives long: PL/pgSQL keeps a generic
-- plan made once, from the statistics of the day it was made, and for
-- this join a generic plan cannot see that a (key, value) pair is rare.
-- Measured: a pool connection opened on a small table kept a plan that
-- scanned every Active item per identifier, and POST /api/items fell from
-- 2,400 to 490 requests/s after 20,000 items while pgbench (new
-- connections, new plans) stayed at 2,900.

ALTER FUNCTION defarm_item_matches(text, jsonb)
    SET plan_cache_mode = force_custom_plan;
