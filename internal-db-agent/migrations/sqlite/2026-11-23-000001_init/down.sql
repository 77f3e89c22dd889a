DROP TABLE login_failures;
DROP TABLE deliveries;
DROP TABLE downloads;
DROP TABLE entitlements;
DROP TABLE roles;
DROP TABLE customers;
