# Real servers for the provider tests (tests/activities/providers/test_docker_builder.py,
# test_prometheus.py). Sourced by .ci/run before pytest: it only installs Debian packages;
# the test fixtures start and stop the servers themselves on 127.0.0.1 (tests/support/podman.py).
#   podman           Docker Engine API (`podman system service`) that builds FROM-scratch images
#   docker-registry  the OCI registry images are pushed to (`docker-registry serve CONFIG`)
#   prometheus       PromQL server for PrometheusMetricsProvider
#   redis-server     Redis 7 for test stages' `services: [redis:7]` (PostgreSQL 16 comes from
#                    the `pgserver` wheel in the venv)
#   openssh-client   ssh-keygen: signed decisions (`ssh-keygen -Y sign/verify`)
#   postgresql       Debian's PostgreSQL 15, the fallback a `postgres:15` service picks
#   bubblewrap       bwrap: the sandbox every untrusted step runs in (activities/providers/
#                    sandbox.py; util-linux's setpriv, always there, drops to its uid)
#   wapiti           the dynamic scanner of `dast` stages (tests/activities/providers/
#                    test_live_tools.py scans a vulnerable stub on 127.0.0.1)
#   nodejs, npm      the HEAL7 frontend's build (`npm ci && npm run build`) in the demo and
#                    its tests (a machine with Node 20 from elsewhere keeps it)
#   chromium         the browser of `browser` and `web_audit` stages (Playwright's
#                    executable_path, Lighthouse's CHROME_PATH; tests/activities/providers/
#                    test_web_tools.py); never a browser Playwright downloads
# npm (global, pinned): lighthouse 12.8.2 (the last for Node 20; 13 needs Node 22) and
# axe-core 4.10.3 (its axe.min.js, injected into pages through Playwright).
# moto_server (ECR) comes from the dev extras (moto[server]) in the venv: nothing to install.
# No one-time setup: each fixture writes its own registries.conf, storage dirs and configs.

# With Recommends: podman's helpers (uidmap, fuse-overlayfs, ...) come along on a fresh machine.
slipway_real_server_packages="podman docker-registry prometheus redis-server openssh-client postgresql bubblewrap wapiti chromium"
command -v npm >/dev/null 2>&1 || slipway_real_server_packages="$slipway_real_server_packages nodejs npm"
slipway_missing_real_servers=""
for slipway_binary in podman docker-registry prometheus redis-server ssh-keygen pg_ctlcluster npm bwrap wapiti chromium; do
    command -v "$slipway_binary" >/dev/null 2>&1 \
        || slipway_missing_real_servers="$slipway_missing_real_servers $slipway_binary"
done
if [ -n "$slipway_missing_real_servers" ]; then
    echo "installing real servers for tests:$slipway_missing_real_servers"
    DEBIAN_FRONTEND=noninteractive apt-get update -q \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            $slipway_real_server_packages \
        || { echo "could not install $slipway_real_server_packages" >&2; return 1 2>/dev/null || exit 1; }
fi
# The web stages' npm tools, at pinned versions; installed again only when a version differs.
# PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: nothing here may fetch a browser of its own.
slipway_npm_tools="lighthouse@12.8.2 axe-core@4.10.3"
slipway_npm_root="$(npm root -g 2>/dev/null || echo /usr/lib/node_modules)"
for slipway_tool in $slipway_npm_tools; do
    slipway_name="${slipway_tool%@*}"
    slipway_version="${slipway_tool##*@}"
    if ! grep -q "\"version\": \"$slipway_version\"" "$slipway_npm_root/$slipway_name/package.json" 2>/dev/null; then
        echo "installing $slipway_tool for the web stages' tests"
        PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install -g --no-fund --no-audit "$slipway_tool" \
            || { echo "could not install $slipway_tool" >&2; return 1 2>/dev/null || exit 1; }
    fi
done
unset slipway_real_server_packages slipway_missing_real_servers slipway_binary
unset slipway_npm_tools slipway_npm_root slipway_tool slipway_name slipway_version
