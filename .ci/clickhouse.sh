#!/usr/bin/env bash
# Install (Debian's clickhouse-server 18.16) and start a ClickHouse bound to 127.0.0.1 for tests.
# Usage: .ci/clickhouse.sh [DIR]   (data, logs and config under DIR, default /tmp/fleetflag-clickhouse)
set -euo pipefail
dir="${1:-/tmp/fleetflag-clickhouse}"

if timeout 5 clickhouse-client --host 127.0.0.1 --port 9000 -q 'SELECT 1' >/dev/null 2>&1; then
    exit 0  # already running
fi
if ! command -v clickhouse-server >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
fi
mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log}
cat > "$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/error.log</errorlog></logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>9000</tcp_port>
    <http_port>8123</http_port>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/config.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>5368709120</mark_cache_size>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
# A second instance on the same data directory would delete the live one's pidfile: checked above.
clickhouse-server --config-file="$dir/config.xml" --pid-file="$dir/clickhouse.pid" --daemon
for _ in $(seq 1 50); do
    if timeout 5 clickhouse-client --host 127.0.0.1 --port 9000 -q 'SELECT 1' >/dev/null 2>&1; then
        exit 0
    fi
    sleep 0.2
done
echo "ClickHouse did not start; see $dir/log/" >&2
exit 1
