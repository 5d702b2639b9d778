-- What `bal serve` needs of a role that does not own the tables (so that it cannot disable
-- the audit log's append-only trigger). Run as the owner, connected to the BAL's database,
-- after `bal db migrate`, and again after a migration that adds tables; replace bal_app with
-- the server's role.
GRANT USAGE ON SCHEMA public TO bal_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON users, sessions, subscriptions, measurements,
    cert_batches, chain_contracts, chain_blocks, chain_transactions, chain_logs, chain_accounts,
    chain_storage, replicas, leases, login_failures, broker_pushed, setpoints, setpoint_devices
    TO bal_app;
GRANT SELECT, INSERT ON audit_log, bal_schema TO bal_app;
GRANT SELECT ON _sqlx_migrations, _bal_ledger_migrations TO bal_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO bal_app;
-- Optional, cluster-wide: lets the server tell other roles' transactions in other databases
-- from its own, so that they never hold certification back (see bal_xid_horizon).
-- GRANT pg_read_all_stats TO bal_app;
