# Sourced by scripts/test-deploy and deploy/build-image: makes, under podman, the images that
# deploy/ names but that no registry can give here (../shared/guides/containers.md). Each image
# carries a label saying which recipe (or which host tool version) made it; a run finds it and
# reuses it, so only the first run pays for it.
#
#   localhost/debian:bookworm-slim        debootstrap --variant=minbase, made like the official
#                                         image (the Dockerfile's runtime stage: FROM debian:bookworm-slim)
#   localhost/rust:1-bookworm             that base + build-essential, pkg-config, libssl-dev, git,
#                                         curl, this machine's Rust toolchain and the crates of
#                                         Cargo.lock (the Dockerfile's builder stage: FROM rust:1-bookworm)
#   localhost/portcullis-test-python      that base + Debian's python3 as `python` (compose: demo)
#   localhost/portcullis-test-prometheus  that base + this machine's Debian prometheus binary, laid
#                                         out like prom/prometheus (compose: prometheus)
#   localhost/portcullis-test-redis       that base + Debian's redis-server, run like the official
#                                         redis image (compose.cluster.yaml: redis)
#
# The caller sets P (the podman command) and CONTAINERS_CONF (local_images_conf writes one).
# Each make_* function takes a scratch directory, returns 0 with the image present, or 1 with
# the reason in LOCAL_IMAGES_ERR. Builds run under `nice -n 15` (shared 2-core machines).

LOCAL_DEBIAN=localhost/debian:bookworm-slim
LOCAL_RUST=localhost/rust:1-bookworm
LOCAL_PYTHON=localhost/portcullis-test-python:1
LOCAL_PROMETHEUS=localhost/portcullis-test-prometheus:1
LOCAL_REDIS=localhost/portcullis-test-redis:1
LOCAL_IMAGES_ERR=""

# local_images_conf FILE: the containers.conf these machines need (cgroups v1 in hybrid mode
# and a fixed open-files limit: runc with cgroupfs, no default ulimits), with netavark, whose
# aardvark-dns lets compose services find each other by name (Debian's CNI setup has no DNS).
local_images_conf() {
  cat >"$1" <<'CONF'
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
[network]
network_backend = "netavark"
CONF
}

_label_of() { $P image inspect --format "{{index .Labels \"$2\"}}" "$1" 2>/dev/null || true; }

# _build TAG CONTEXT LOG: builds CONTEXT's Containerfile as TAG (niced, output in LOG); on
# failure, 1 with the log's last lines in LOCAL_IMAGES_ERR.
_build() {
  nice -n 15 $P build -q --format docker --network host -t "$1" "$2" >"$3" 2>&1 && return 0
  LOCAL_IMAGES_ERR="building $1 failed: $(tail -3 "$3")"
  return 1
}

# make_debian_base DIR
make_debian_base() {
  [ "$(_label_of $LOCAL_DEBIAN portcullis.test-base)" = 2 ] && return 0
  local r=$1/rootfs
  if ! debootstrap --variant=minbase bookworm "$r" http://deb.debian.org/debian >"$1/debootstrap.log" 2>&1; then
    LOCAL_IMAGES_ERR="debootstrap of bookworm failed (no access to deb.debian.org?): $(tail -1 "$1/debootstrap.log")"
    return 1
  fi
  # Made like the official image (debuerreotype): apt deletes downloaded packages after each
  # install (docker-clean), which the Dockerfile's `rm -rf /var/lib/apt/lists/*` relies on,
  # and the slim variant leaves out docs, man pages and locales.
  cat >"$r/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  echo 'Acquire::Languages "none";' >"$r/etc/apt/apt.conf.d/docker-no-languages"
  cat >"$r/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
DPKG
  find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$r"/usr/share/{man,groff,info,lintian,linda,locale}/* "$r"/var/cache/apt/archives/*.deb \
    "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/*
  tar -C "$r" -c . | $P import -q --change 'LABEL portcullis.test-base=2' - $LOCAL_DEBIAN >/dev/null
  rm -rf "$r"
}

# make_rust_image DIR WORKSPACE: rust:1-bookworm is buildpack-deps:bookworm plus rustup's
# toolchain under /usr/local/{rustup,cargo}. This one has the part of buildpack-deps a Rust build
# uses and the toolchain this machine builds with (rustc, cargo and the standard library, not
# the docs), at the official image's paths, so the Dockerfile's PATH and cache mounts work as
# with the real image. One difference: cargo inside a build cannot reach crates.io here (TLS
# fails: "self-signed certificate in certificate chain"; this network's certificate is trusted
# on the machine, not in images), so the crates of WORKSPACE's Cargo.lock are vendored into the
# image and $CARGO_HOME/config.toml points crates-io at them. The Dockerfile's build is then
# the same, offline: its cache mount on /usr/local/cargo/registry stays empty.
make_rust_image() {
  local sysroot version lock
  sysroot=$(rustc --print sysroot) && version=$(rustc -V) || { LOCAL_IMAGES_ERR="no rustc on this machine"; return 1; }
  lock=$(sha256sum "$2/Cargo.lock" | cut -c1-16)
  [ "$(_label_of $LOCAL_RUST portcullis.rustc)" = "$version, Cargo.lock $lock" ] && return 0
  make_debian_base "$1" || return 1
  local ctx=$1/rust-ctx tc
  tc=$(basename "$sysroot")
  mkdir -p "$ctx/toolchain/bin"
  cp -a "$sysroot/bin/cargo" "$sysroot/bin/rustc" "$ctx/toolchain/bin/"
  cp -a "$sysroot/lib" "$ctx/toolchain/"
  if ! (cd "$2" && cargo fetch --locked -q && cargo vendor --locked --offline -q --versioned-dirs "$ctx/crates" >/dev/null) 2>"$1/vendor.log"; then
    LOCAL_IMAGES_ERR="cargo vendor of $2/Cargo.lock failed: $(tail -3 "$1/vendor.log")"
    rm -rf "$ctx"; return 1
  fi
  cat >"$ctx/cargo-config.toml" <<'EOF'
# scripts/local-images.sh: crates.io is not reachable from inside builds on this machine.
[source.crates-io]
replace-with = "vendored-sources"
[source.vendored-sources]
directory = "/usr/local/cargo-vendored"
EOF
  cat >"$ctx/Containerfile" <<EOF
FROM $LOCAL_DEBIAN
RUN apt-get update \\
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev git curl ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY toolchain /usr/local/rustup/toolchains/$tc
COPY crates /usr/local/cargo-vendored
COPY cargo-config.toml /usr/local/cargo/config.toml
RUN mkdir -p /usr/local/cargo/bin \\
 && ln -s /usr/local/rustup/toolchains/$tc/bin/cargo /usr/local/cargo/bin/cargo \\
 && ln -s /usr/local/rustup/toolchains/$tc/bin/rustc /usr/local/cargo/bin/rustc \\
 && cargo --version && rustc --version
LABEL portcullis.rustc="$version, Cargo.lock $lock"
EOF
  _build $LOCAL_RUST "$ctx" "$1/rust-image.log" || { rm -rf "$ctx"; return 1; }
  rm -rf "$ctx"
}

# make_python_image DIR: the demo upstream is standard-library Python run as `python`.
make_python_image() {
  [ "$(_label_of $LOCAL_PYTHON portcullis.test-standin)" = python-1 ] && return 0
  make_debian_base "$1" || return 1
  local ctx=$1/python-ctx
  mkdir -p "$ctx"
  cat >"$ctx/Containerfile" <<EOF
FROM $LOCAL_DEBIAN
RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3 python-is-python3 \\
 && rm -rf /var/lib/apt/lists/*
LABEL portcullis.test-standin=python-1
EOF
  _build $LOCAL_PYTHON "$ctx" "$1/python-image.log"
}

# make_prometheus_image DIR: prom/prometheus runs /bin/prometheus as nobody in /prometheus, and
# compose passes only arguments; the same here with Debian's build of Prometheus.
make_prometheus_image() {
  local version
  version=$(prometheus --version 2>&1 | head -1) || { LOCAL_IMAGES_ERR="no prometheus on this machine"; return 1; }
  [ "$(_label_of $LOCAL_PROMETHEUS portcullis.prometheus)" = "$version" ] && return 0
  make_debian_base "$1" || return 1
  local ctx=$1/prometheus-ctx
  mkdir -p "$ctx"
  cp "$(command -v prometheus)" "$ctx/prometheus"
  cat >"$ctx/Containerfile" <<EOF
FROM $LOCAL_DEBIAN
COPY prometheus /bin/prometheus
RUN install -d -o nobody -g nogroup /prometheus /etc/prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
LABEL portcullis.prometheus="$version"
EOF
  _build $LOCAL_PROMETHEUS "$ctx" "$1/prometheus-image.log"
}

# make_redis_image DIR: the official redis image runs `redis-server` with its built-in defaults
# (no config file, every interface) as user redis in /data, with protected mode off (it patches
# the default: in a container, clients come from other containers, never from loopback). The
# same here with Debian's redis-server; protected mode is turned off on the command line.
make_redis_image() {
  [ "$(_label_of $LOCAL_REDIS portcullis.test-standin)" = redis-1 ] && return 0
  make_debian_base "$1" || return 1
  local ctx=$1/redis-ctx
  mkdir -p "$ctx"
  cat >"$ctx/Containerfile" <<EOF
FROM $LOCAL_DEBIAN
RUN apt-get update \\
 && apt-get install -y --no-install-recommends redis-server \\
 && rm -rf /var/lib/apt/lists/* \\
 && install -d -o redis -g redis /data
USER redis
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
LABEL portcullis.test-standin=redis-1
EOF
  _build $LOCAL_REDIS "$ctx" "$1/redis-image.log"
}
