//! The diesel table definitions, shared by both backends (written by hand to the common
//! subset of types: `BigInt` ids, `Timestamp` as UTC `NaiveDateTime`, `Text`, `Bool`).

diesel::table! {
    /// People who may log in.
    customers (id) {
        /// Row id.
        id -> BigInt,
        /// Unique login name (lower case).
        login -> Text,
        /// Display name.
        display_name -> Text,
        /// E-mail address.
        email -> Text,
        /// argon2id PHC string; never leaves the agent.
        password_hash -> Text,
        /// A disabled customer cannot log in or download.
        disabled -> Bool,
        /// When the customer was created (UTC).
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Roles held by customers: `customer` or `admin`.
    roles (customer_id, role) {
        /// The customer.
        customer_id -> BigInt,
        /// `customer` or `admin`.
        role -> Text,
    }
}

diesel::table! {
    /// Which products (and which versions of them) a customer may download.
    entitlements (id) {
        /// Row id.
        id -> BigInt,
        /// The customer.
        customer_id -> BigInt,
        /// Product name as in the stager's catalog.
        product -> Text,
        /// Version constraint, e.g. `>=2.0, <3` (see `versions`).
        versions -> Text,
        /// After this instant (UTC) the entitlement no longer holds.
        expires_at -> Nullable<Timestamp>,
        /// When it was granted (UTC).
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Append-only: one row per staged download.
    downloads (id) {
        /// Row id (the history id).
        id -> BigInt,
        /// Who.
        customer_id -> BigInt,
        /// What product.
        product -> Text,
        /// Which version.
        version -> Text,
        /// File names, one per line.
        files -> Text,
        /// The stager's download area.
        area_id -> Text,
        /// When it was staged (UTC).
        staged_at -> Timestamp,
        /// The customer's address as the web frontend saw it.
        client_addr -> Text,
    }
}

diesel::table! {
    /// Append-only: completed transfers out of download areas.
    deliveries (id) {
        /// Row id.
        id -> BigInt,
        /// The stager's download area.
        area_id -> Text,
        /// File name within the area.
        file -> Text,
        /// Bytes sent.
        bytes -> BigInt,
        /// `ftp`, `ftps` or `https`.
        protocol -> Text,
        /// The stager's delivery-log sequence number, when known (deduplicates re-sends).
        stager_seq -> Nullable<BigInt>,
        /// When it completed (UTC, as recorded by the agent).
        delivered_at -> Timestamp,
        /// Which stager's log `stager_seq` numbers (`""`: the one unnamed stager).
        stager -> Text,
    }
}

diesel::table! {
    /// Failed-login counters for lockout, keyed by the login as given.
    login_failures (login) {
        /// The login as typed (lower-cased), known or not.
        login -> Text,
        /// Failures inside the current window.
        failures -> Integer,
        /// Start of the current window.
        first_failure_at -> Timestamp,
        /// Locked until this instant, if locked.
        locked_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// Append-only: operator decisions that take staged areas (and, for a disable, the
    /// customer's open web sessions) away; read by the web frontend as a feed.
    revocations (id) {
        /// Row id (the feed's cursor).
        id -> BigInt,
        /// Whose.
        customer_id -> BigInt,
        /// One product's areas, or everything of the customer (a disable) when NULL.
        product -> Nullable<Text>,
        /// When it was decided (UTC).
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Areas whose prepare the web frontend gave up (`agent.withdraw-download`): a late
    /// record of one is refused.
    withdrawn_areas (area_id) {
        /// The stager's area id.
        area_id -> Text,
        /// Whose.
        customer_id -> BigInt,
        /// When it was withdrawn (UTC).
        withdrawn_at -> Timestamp,
    }
}

diesel::joinable!(roles -> customers (customer_id));
diesel::joinable!(entitlements -> customers (customer_id));
diesel::joinable!(downloads -> customers (customer_id));
diesel::joinable!(revocations -> customers (customer_id));
diesel::allow_tables_to_appear_in_same_query!(
    customers,
    roles,
    entitlements,
    downloads,
    deliveries,
    login_failures,
    revocations,
    withdrawn_areas
);
