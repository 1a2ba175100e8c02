-- agenthost schema 9: the batch functions of schema 8 keep one plan per statement.
--
-- Their statements take arrays as parameters. PL/pgSQL plans a statement with parameters
-- for the values of the first calls (custom plans), then keeps a generic plan only if its
-- estimated cost is no higher than theirs: with arrays of unknown length it is estimated
-- dearer, so every statement of every call was planned again. Measured on a backend
-- running begin_many and commit_many over 8 sessions each in a loop: 0.185 -> 0.135 ms of
-- CPU per turn, a lone row's begin 0.8 -> 0.43 ms. The plans do not depend on the values:
-- every row is found by its key (the functions turn off sequential scans, hash and merge
-- joins), so the generic plan is the custom one.

ALTER FUNCTION agenthost_begin_many(
    text[], text[], text[], text[], integer[], integer[], double precision[], text[],
    double precision[], integer[])
    SET plan_cache_mode = force_generic_plan;

ALTER FUNCTION agenthost_commit_many(
    text[], text[], bigint[], text[], double precision[], integer[], text[],
    double precision[], integer[], text[], double precision[], bytea[])
    SET plan_cache_mode = force_generic_plan;
