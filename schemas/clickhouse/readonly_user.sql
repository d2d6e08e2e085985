-- A read-only ClickHouse user for analysts and Grafana (run once by an administrator;
-- the compose stack runs it at first start). Change the password.
CREATE USER IF NOT EXISTS ccpipe_analyst IDENTIFIED WITH sha256_password BY 'analyst'
    SETTINGS readonly = 2;  -- reads only; may change settings such as max_execution_time (Grafana needs that)
GRANT SELECT ON ccpipe.* TO ccpipe_analyst;
