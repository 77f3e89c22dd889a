-- ffs internal database, SQLite flavour. Timestamps are UTC.
CREATE TABLE customers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    login TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled BOOLEAN NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE roles (
    customer_id BIGINT NOT NULL REFERENCES customers(id),
    role TEXT NOT NULL CHECK (role IN ('customer', 'admin')),
    PRIMARY KEY (customer_id, role)
);

CREATE TABLE entitlements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id BIGINT NOT NULL REFERENCES customers(id),
    product TEXT NOT NULL,
    versions TEXT NOT NULL,
    expires_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (customer_id, product)
);

-- Append-only: the agent never updates or deletes these rows.
CREATE TABLE downloads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id BIGINT NOT NULL REFERENCES customers(id),
    product TEXT NOT NULL,
    version TEXT NOT NULL,
    files TEXT NOT NULL,
    area_id TEXT NOT NULL,
    staged_at TIMESTAMP NOT NULL,
    client_addr TEXT NOT NULL
);
CREATE INDEX downloads_customer ON downloads (customer_id, id);
CREATE INDEX downloads_area ON downloads (area_id);

-- Append-only: completed transfers reported by the stager (via the web frontend).
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    area_id TEXT NOT NULL,
    file TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    protocol TEXT NOT NULL,
    stager_seq BIGINT UNIQUE,
    delivered_at TIMESTAMP NOT NULL
);
CREATE INDEX deliveries_area ON deliveries (area_id);

-- Failed-login counting for lockout; keyed by the login as typed (known or not).
CREATE TABLE login_failures (
    login TEXT PRIMARY KEY NOT NULL,
    failures INTEGER NOT NULL,
    first_failure_at TIMESTAMP NOT NULL,
    locked_until TIMESTAMP
);
