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
# moto_server (ECR) comes from the dev extras (moto[server]) in the venv: nothing to install.
# No one-time setup: each fixture writes its own registries.conf, storage dirs and configs.

# With Recommends: podman's helpers (uidmap, fuse-overlayfs, ...) come along on a fresh machine.
slipway_real_server_packages="podman docker-registry prometheus redis-server openssh-client postgresql bubblewrap wapiti"
command -v npm >/dev/null 2>&1 || slipway_real_server_packages="$slipway_real_server_packages nodejs npm"
slipway_missing_real_servers=""
for slipway_binary in podman docker-registry prometheus redis-server ssh-keygen pg_ctlcluster npm bwrap wapiti; do
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
unset slipway_real_server_packages slipway_missing_real_servers slipway_binary
