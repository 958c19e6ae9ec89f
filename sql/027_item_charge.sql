-- Charging an item creation (defarm_credits on): the debit is written in
-- the transaction that creates the item, after it, so the two commit or
-- roll back together; a balance that cannot pay raises DF402 (the module
-- answers 402 insufficient_credits with the cost and the balance), which
-- takes the new item back with it.  Enriching an existing item, or an item
-- held as pending, costs nothing.

CREATE FUNCTION defarm_item_create_charged(p_owner text, p_ids jsonb,
                                           p_enriched jsonb, p_source uuid,
                                           p_charge boolean)
RETURNS TABLE (dfid text, created boolean, item jsonb, conflicts text[],
               pending_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    r        record;
    v_cost   int;
    v_after  bigint;
    v_bal    bigint;
BEGIN
    SELECT * INTO r FROM defarm_item_create_or_hold(p_owner, p_ids,
                                                    p_enriched, p_source);

    IF p_charge AND r.created THEN
        SELECT c.item_creation INTO v_cost
        FROM users u JOIN credit_costs c ON c.tier = u.tier
        WHERE u.id = p_owner;

        IF coalesce(v_cost, 0) > 0 THEN
            v_after := defarm_credit_change(p_owner, -v_cost, 'Consumption',
                                            'item_creation', r.dfid,
                                            'Item creation', p_owner);

            IF v_after IS NULL THEN
                SELECT credits INTO v_bal FROM users WHERE id = p_owner;
                RAISE EXCEPTION USING ERRCODE = 'DF402',
                    MESSAGE = 'Insufficient credits',
                    DETAIL = v_cost || ' ' || coalesce(v_bal, 0);
            END IF;
        END IF;
    END IF;

    RETURN QUERY SELECT r.dfid, r.created, r.item, r.conflicts, r.pending_id;
END
$$;
