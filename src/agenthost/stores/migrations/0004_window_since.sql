-- begin_turn for a caller that already holds the session's history up to a mark (its window
-- cache, turns/window_cache.py): the same step as agenthost_begin_turn_fp, and the window
-- holds only the messages after the mark when the mark is of this incarnation of the session
-- (its created_at) and not ahead of it (delta), else the whole window. created_at names the
-- incarnation. A NULL mark asks for the whole window.
CREATE FUNCTION agenthost_begin_turn_since(
    p_sid text, p_tid text, p_message text, p_patch jsonb, p_lease_ms integer,
    p_window integer, p_ttl double precision, p_fingerprint text,
    p_known_created double precision, p_known_count integer,
    OUT kind text, OUT fence bigint, OUT message_count integer, OUT created boolean,
    OUT metadata jsonb, OUT history jsonb, OUT turn jsonb, OUT busy_turn_id text,
    OUT created_at double precision, OUT delta boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_since integer := 0;
BEGIN
    delta := false;
    -- The step itself, without its window: the row is locked until the transaction ends.
    SELECT b.kind, b.fence, b.message_count, b.created, b.metadata, b.turn, b.busy_turn_id
      INTO kind, fence, message_count, created, metadata, turn, busy_turn_id
      FROM agenthost_begin_turn_fp(p_sid, p_tid, p_message, p_patch, p_lease_ms, 0, p_ttl,
                                   p_fingerprint) AS b;
    IF kind <> 'started' THEN
        RETURN;
    END IF;
    SELECT s.created_at INTO created_at FROM agenthost_sessions s WHERE s.session_id = p_sid;
    IF p_known_created IS NOT NULL AND created_at = p_known_created
            AND p_known_count <= message_count THEN
        delta := true;
        v_since := p_known_count;
    END IF;
    history := '[]';
    IF p_window > 0 AND message_count > v_since THEN
        SELECT coalesce(jsonb_agg(jsonb_build_object('role', w.role, 'content', w.content,
            'turn_id', w.turn_id, 'created_at', w.created_at, 'seq', w.seq) ORDER BY w.seq),
            '[]')
        INTO history
        FROM (SELECT * FROM agenthost_messages m WHERE m.session_id = p_sid
              AND m.seq < message_count AND m.seq >= v_since
              ORDER BY m.seq DESC LIMIT p_window) w;
    END IF;
END $$;
