-- A sandbox row inserted with the job that creates it (create_sandbox inserts its row at
-- submission, status 'creating', so that environment values are stored here and not in the
-- job's arguments). The row belongs to that job until the job makes it usable: if the job ends
-- failed or cancelled (cancelled while queued, interrupted, timed out, panicked) while the row
-- is still 'creating', the row goes with it and the name is free again.
ALTER TABLE sandboxes ADD COLUMN creating_job UUID;
CREATE INDEX sandboxes_creating_job ON sandboxes (creating_job) WHERE creating_job IS NOT NULL;
CREATE FUNCTION sandboxes_release_with_their_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sandboxes WHERE creating_job = NEW.id AND status = 'creating';
    RETURN NULL;
END
$$;
CREATE TRIGGER sandboxes_release_with_their_job AFTER UPDATE OF state ON jobs
FOR EACH ROW WHEN (NEW.state IN ('failed', 'cancelled') AND OLD.state IS DISTINCT FROM NEW.state)
EXECUTE FUNCTION sandboxes_release_with_their_job();
