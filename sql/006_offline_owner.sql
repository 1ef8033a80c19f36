-- Deleting an account deletes its stored offline messages too.
ALTER TABLE offline ADD CONSTRAINT offline_owner FOREIGN KEY (owner) REFERENCES users (localpart) ON DELETE CASCADE;
