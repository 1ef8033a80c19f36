-- Offline storage (XEP-0160): messages for users with no available resource,
-- delivered in id order on their next available presence, then deleted.
-- stanza holds the serialised stanza with its urn:xmpp:delay stamp.
CREATE TABLE IF NOT EXISTS offline (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    owner VARCHAR(64) NOT NULL,
    stanza MEDIUMBLOB NOT NULL,
    created DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    expires DATETIME NOT NULL,
    KEY offline_owner (owner, id),
    KEY offline_expires (expires)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE utf8mb4_bin;
