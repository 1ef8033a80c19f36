-- The foundation schema: migration bookkeeping and accounts.
-- Each statement ends with ";" at the end of a line (the splitter's rule).

CREATE TABLE IF NOT EXISTS schema_version (
    version INT NOT NULL PRIMARY KEY,
    name VARCHAR(128) NOT NULL,
    applied TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE utf8mb4_bin;

-- localpart: the hex SHA-1 of the phone number, or an admin-chosen name.
-- fingerprint: the OpenPGP key fingerprint, for key-authenticated accounts.
-- The scram_* columns hold SCRAM credentials (RFC 5802/7677), never a password.
CREATE TABLE IF NOT EXISTS users (
    localpart VARCHAR(64) NOT NULL PRIMARY KEY,
    fingerprint VARCHAR(40) NULL,
    scram_sha1_salt VARBINARY(32) NULL,
    scram_sha1_iterations INT NULL,
    scram_sha1_stored_key VARBINARY(20) NULL,
    scram_sha1_server_key VARBINARY(20) NULL,
    scram_sha256_salt VARBINARY(32) NULL,
    scram_sha256_iterations INT NULL,
    scram_sha256_stored_key VARBINARY(32) NULL,
    scram_sha256_server_key VARBINARY(32) NULL,
    created DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_login DATETIME NULL,
    last_logout DATETIME NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE utf8mb4_bin;
