-- Rosters and presence subscriptions (RFC 6121 §2, §3). One row per (owner,
-- contact) with any state: in_roster says whether the owner has the contact
-- in the roster (a pending subscription request alone is not a roster item).
-- subscription: bit 1 = "to" (owner sees the contact), bit 2 = "from".
-- ask: the owner asked to subscribe (pending out). pending_in: the
-- contact's subscription request waiting for an answer (its stanza, so it
-- can be delivered at the owner's next login). approved: pre-approval.
CREATE TABLE IF NOT EXISTS roster (
    owner VARCHAR(64) NOT NULL,
    contact VARCHAR(255) NOT NULL,
    in_roster TINYINT NOT NULL DEFAULT 0,
    name VARCHAR(255) NULL,
    groups_ TEXT NULL,
    subscription TINYINT NOT NULL DEFAULT 0,
    ask TINYINT NOT NULL DEFAULT 0,
    approved TINYINT NOT NULL DEFAULT 0,
    pending_in MEDIUMBLOB NULL,
    ver BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, contact),
    CONSTRAINT roster_owner FOREIGN KEY (owner) REFERENCES users (localpart) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE utf8mb4_bin;

-- The roster version of each owner (XEP-0237 style 'ver'): bumped on every change.
CREATE TABLE IF NOT EXISTS roster_version (
    owner VARCHAR(64) NOT NULL PRIMARY KEY,
    ver BIGINT NOT NULL,
    CONSTRAINT roster_version_owner FOREIGN KEY (owner) REFERENCES users (localpart)
        ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE utf8mb4_bin;
