-- vcard-temp (XEP-0054): one vCard per account, stored as the serialised
-- <vCard xmlns='vcard-temp'/> element (written by kt_xml_serialize, so it is
-- well-formed and namespace-complete on its own). Deleting the account
-- deletes its vCard.
CREATE TABLE IF NOT EXISTS vcards (
    localpart VARCHAR(64) NOT NULL PRIMARY KEY,
    vcard MEDIUMBLOB NOT NULL,
    updated DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT vcards_user FOREIGN KEY (localpart) REFERENCES users (localpart)
        ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE utf8mb4_bin;
