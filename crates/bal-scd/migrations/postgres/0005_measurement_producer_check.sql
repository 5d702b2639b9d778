-- A measurement names an existing producer: checked once per INSERT statement instead of by
-- the foreign key, which checked every row (a lookup in users and a KEY SHARE lock on the
-- producer's row, per reading). On a 500-row UNNEST insert with the table's indexes, the
-- foreign key made inserts ~1.5x slower (67 000-84 000 against 99 000-123 000 rows/s); the
-- check below costs what no check costs. With two batches in flight, both also locked the
-- same producers' rows.
--
-- The foreign key also kept a producer with measurements from being deleted or renamed. Both
-- are refused below, for everyone: accounts are deleted by marking them (deleted_at), and
-- their readings and certified history stay. A replica of the previous release runs unchanged
-- on this schema (it neither deletes nor renames users).
ALTER TABLE measurements DROP CONSTRAINT measurements_producer_fkey;

CREATE FUNCTION measurements_producers_exist() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM (SELECT DISTINCT producer FROM inserted) n
               WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.username = n.producer)) THEN
        RAISE EXCEPTION 'a measurement names a producer that is not a user'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER measurements_producers_exist AFTER INSERT ON measurements
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION measurements_producers_exist();

CREATE FUNCTION users_stay() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'users are not deleted or renamed: set deleted_at'
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER users_not_deleted BEFORE DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION users_stay();
CREATE TRIGGER users_not_renamed BEFORE UPDATE OF username ON users
    FOR EACH ROW WHEN (OLD.username IS DISTINCT FROM NEW.username)
    EXECUTE FUNCTION users_stay();
