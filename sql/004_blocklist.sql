-- Blocking (XEP-0191): the JIDs each account blocks. jid is the normalised
-- JID as the client named it (full, bare, domain/resource or domain), up to
-- 3071 bytes, so the key is its SHA-256. Deleting the account deletes its
-- blocklist.
CREATE TABLE IF NOT EXISTS blocklist (
    owner VARCHAR(64) NOT NULL,
    jid_hash BINARY(32) NOT NULL,
    jid VARBINARY(3071) NOT NULL,
    created DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (owner, jid_hash),
    CONSTRAINT blocklist_user FOREIGN KEY (owner) REFERENCES users (localpart)
        ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE utf8mb4_bin;
