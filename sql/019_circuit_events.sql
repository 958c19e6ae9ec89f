-- Events follow circuits: a CircuitOnly event of an item is readable by
-- the members of a circuit the item is in (Private ones stay the
-- owner's).

CREATE FUNCTION defarm_circuit_shares(p_dfid text, p_user text)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM circuit_items ci
                   JOIN circuit_members m ON m.circuit_id = ci.circuit_id
                   WHERE ci.dfid = p_dfid AND m.member_id = p_user)
$$;
