-- Kontalk accounts and services (kontalk-protocol.md §2).

-- The public keyring of each key-authenticated user, as the node certified
-- it (users.fingerprint names the current key).
CREATE TABLE IF NOT EXISTS pubkeys (
    localpart VARCHAR(64) NOT NULL PRIMARY KEY,
    fingerprint VARCHAR(40) NOT NULL,
    keyring MEDIUMBLOB NOT NULL,
    updated DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT pubkeys_owner FOREIGN KEY (localpart) REFERENCES users (localpart) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE utf8mb4_bin;

-- Pending phone verifications: one per account id (the phone hash).
CREATE TABLE IF NOT EXISTS validations (
    localpart VARCHAR(64) NOT NULL PRIMARY KEY,
    code VARCHAR(16) NOT NULL,
    created DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    attempts INT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE utf8mb4_bin;

-- Registration attempts for throttling, by key ("ip:..", "phone:..", "prefix:..").
CREATE TABLE IF NOT EXISTS register_attempts (
    tkey VARCHAR(80) NOT NULL PRIMARY KEY,
    attempts INT NOT NULL DEFAULT 0,
    last DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE utf8mb4_bin;

-- Private keys parked for transfer to another device, by one-time token.
CREATE TABLE IF NOT EXISTS privatekeys (
    token CHAR(40) NOT NULL PRIMARY KEY,
    localpart VARCHAR(64) NOT NULL,
    keydata MEDIUMBLOB NOT NULL,
    created DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT privatekeys_owner FOREIGN KEY (localpart) REFERENCES users (localpart) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE utf8mb4_bin;

-- The servers of the network (network@host serverlist, probe targets).
CREATE TABLE IF NOT EXISTS servers (
    host VARCHAR(255) NOT NULL PRIMARY KEY,
    fingerprint VARCHAR(40) NULL,
    enabled BOOL NOT NULL DEFAULT TRUE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE utf8mb4_bin;

-- Push registrations (push@host): one per user and provider.
CREATE TABLE IF NOT EXISTS push (
    localpart VARCHAR(64) NOT NULL,
    provider VARCHAR(64) NOT NULL,
    reg_id VARCHAR(4096) NOT NULL,
    updated DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (localpart, provider),
    CONSTRAINT push_owner FOREIGN KEY (localpart) REFERENCES users (localpart) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE utf8mb4_bin;
