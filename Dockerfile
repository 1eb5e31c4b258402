# gymserve: a venv built in one stage, copied into a clean runtime stage that runs as a fixed non-root user.
#
#   docker build -t gymserve .                                          # classic-control + toy-text
#   docker build -t gymserve --build-arg ENV_FAMILIES=classic-control,toy-text,mujoco .
#   docker build -t gymserve --build-arg ENV_FAMILIES=classic-control,toy-text,atari --build-arg ENV_MODULES=ale_py .
#   docker build -t gymserve --build-arg EXTRA_PIP_PACKAGES="my-envs==1.2" --build-arg ENV_MODULES=my_envs .
#   docker run --rm -p 127.0.0.1:8000:8000 gymserve
#
# A derived image (FROM gymserve, pip install your package, ENV GYMSERVE_ENV_MODULES) is the other
# way to add envs: see docs/custom-envs.md and examples/guess-env/Dockerfile.
#
# No registry? Pass a local base image: --build-arg PYTHON_IMAGE=local/python:3.11-bookworm.
# Builds with BuildKit and with the legacy builder alike: no `# syntax=` line, no RUN --mount.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

# Gymnasium extras to install on top of the ones gymserve always needs (classic-control, toy-text):
# a comma-separated list such as "mujoco", "box2d" or "atari" (ale-py, which ships its ROMs; it
# needs ENV_MODULES=ale_py, which registers the ALE/* envs). Gymnasium 1.x's box2d is a wheel.
ARG ENV_FAMILIES=classic-control,toy-text
# Extra pip requirement specifiers, space-separated (e.g. "my-envs==1.2 other-envs>=0.3"), installed
# into the same venv with gymserve's pinned requirements, so that pip resolves them together.
ARG EXTRA_PIP_PACKAGES=""
# Modules every worker imports at start (GYMSERVE_ENV_MODULES): the packages that register envs.
ARG ENV_MODULES=""
# Debian packages that only the build needs, e.g. "build-essential" for a package that has no wheel.
# (Gymnasium >= 1.1 depends on the Box2D wheel: box2d no longer needs swig and a compiler.) Not in the runtime.
ARG BUILD_APT_PACKAGES=""

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN if [ -n "$BUILD_APT_PACKAGES" ]; then \
        apt-get update && apt-get install -y --no-install-recommends $BUILD_APT_PACKAGES \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# The venv carries its own pip (about 12 MB), so that a derived image can `RUN pip install my-envs`
# into it: see docs/custom-envs.md.
RUN python3 -m venv /opt/gymserve

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so that a change to the code reuses this layer.
# The client's dependencies, the server's (the "server" extra) and the quota store's client (the "tenants"
# extra): the image is a farm's server. pip merges the extra "gymnasium[...]" line with the pinned gymnasium
# requirement of the project.
COPY pyproject.toml ./
RUN python3 -c 'import re, sys, tomllib; \
families = [f.strip() for f in sys.argv[1].split(",") if f.strip()]; \
bad = [f for f in families if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", f)]; \
bad and sys.exit(f"ENV_FAMILIES: not a Gymnasium extra name: {bad}"); \
"atari" in families and "ale_py" not in sys.argv[2].replace(" ", "").split(",") and \
    sys.exit("ENV_FAMILIES=atari: add --build-arg ENV_MODULES=ale_py (ale_py registers the ALE/* envs on import)"); \
project = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
deps = project["dependencies"] + project["optional-dependencies"]["server"] + project["optional-dependencies"]["tenants"]; \
extra = ["gymnasium[" + ",".join(families) + "]"] if families else []; \
print("\n".join(deps + extra + sys.argv[3].split()))' "$ENV_FAMILIES" "$ENV_MODULES" "$EXTRA_PIP_PACKAGES" \
    > requirements.txt \
    && cat requirements.txt \
    && python3 -m pip --python /opt/gymserve/bin/python install -r requirements.txt

COPY README.md ./
COPY service ./service
RUN python3 -m pip --python /opt/gymserve/bin/python install --no-deps . \
    && /opt/gymserve/bin/gymserve --version \
    && if [ -n "$ENV_MODULES" ]; then \
        /opt/gymserve/bin/python -c 'import importlib, sys; [importlib.import_module(m.strip()) for m in sys.argv[1].split(",") if m.strip()]' "$ENV_MODULES"; \
    fi

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=dev
ARG REVISION=unknown
ARG ENV_FAMILIES=classic-control,toy-text
ARG ENV_MODULES=""
LABEL org.opencontainers.image.title="gymserve" \
      org.opencontainers.image.description="Gymnasium environments served over HTTP" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      io.gymserve.env-families="${ENV_FAMILIES}" \
      io.gymserve.env-modules="${ENV_MODULES}"

# Debian packages the envs need at run time, e.g. "libosmesa6" for MuJoCo's rgb_array renders
# (then run with MUJOCO_GL=osmesa).
ARG RUNTIME_APT_PACKAGES=""
RUN if [ -n "$RUNTIME_APT_PACKAGES" ]; then \
        apt-get update && apt-get install -y --no-install-recommends $RUNTIME_APT_PACKAGES \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# A fixed UID/GID (not root, not a host user's 1000), so that volume permissions and Kubernetes'
# runAsUser are predictable. No home directory and no login shell.
# /var/lib/gymserve/farm-key belongs to that user: a new named volume mounted there takes its owner and mode, so
# that compose's `keygen` service (`gymserve keygen`, as this user) can write the farm's key into it.
RUN groupadd --system --gid 10001 gymserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gymserve \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/gymserve/farm-key

COPY --from=build /opt/gymserve /opt/gymserve

# GYMSERVE_HOST: a container must listen on every interface. PROMETHEUS_MULTIPROC_DIR lives in /tmp
# (a tmpfs in compose); `gymserve serve` wipes and creates it before gunicorn forks its workers.
ENV PATH=/opt/gymserve/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GYMSERVE_HOST=0.0.0.0 \
    GYMSERVE_PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/gymserve-metrics \
    GYMSERVE_ENV_MODULES=${ENV_MODULES} \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

USER 10001:10001
WORKDIR /tmp
EXPOSE 8000

# Liveness without curl (the slim image has none): the Python of the venv asks /healthz.
HEALTHCHECK --interval=5s --timeout=4s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GYMSERVE_PORT', '8000'), timeout=3)"]

# Exec form: `gymserve serve` execs gunicorn, whose master becomes PID 1 and receives SIGTERM to drain.
ENTRYPOINT ["gymserve"]
CMD ["serve"]
