# syntax=docker/dockerfile:1
# benefits-ledger worker image: `benefits-ledger` is the entrypoint, the compose file picks the role
# (`up --role processor|relay`). Any CLI command runs the same way: docker run IMAGE summary --json.

# -- build: a wheel of the project and of every dependency (no compilers needed in the runtime) -----
FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --wheel-dir /wheels .

# -- runtime --------------------------------------------------------------------------------------
FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Installed from the wheels above: a regular (non-editable) install into site-packages.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels benefits-ledger
# The compose services' entrypoint: a deliberate stop (exit 4) is not restarted (see docker/ledger-service).
COPY --chmod=0755 docker/ledger-service /usr/local/bin/ledger-service
# Non-root. Its home is the working directory, where the Faust worker keeps its data directory, and
# holds LEDGER_DATA_DIR's default (only used by the embedded stack, which compose does not use).
RUN useradd --create-home --home-dir /home/ledger --uid 10001 --user-group --shell /usr/sbin/nologin ledger
USER ledger
WORKDIR /home/ledger
ENTRYPOINT ["benefits-ledger"]
CMD ["up", "--role", "all"]
