"""ClickHouse storage: migrations, row shapes, backends (clickhouse-driver, chDB), the writer."""
