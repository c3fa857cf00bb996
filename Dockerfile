# deploybot in a container: `docker build -t deploybot .` then see README "Running it".
# One instance on SQLite needs a persistent volume at /data; several need PostgreSQL (DATABASE_URL).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PORT=3000 \
    DEPLOYBOT_DB=/data/deploybot.db \
    DEPLOYBOT_CONFIG=/app/config/deploybot.toml

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY config ./config
RUN pip install . \
    && groupadd --system --gid 10001 deploybot \
    && useradd --system --uid 10001 --gid deploybot --home-dir /app --shell /usr/sbin/nologin deploybot \
    && mkdir -p /data \
    && chown deploybot:deploybot /data

USER deploybot:deploybot
VOLUME ["/data"]
EXPOSE 3000

# python, not curl (the slim image has no curl): /healthz on the health port in Socket Mode, else on $PORT
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('DEPLOYBOT_HEALTH_PORT') or os.environ.get('PORT', '3000')), timeout=4)"

CMD ["deploybot", "serve", "--log-format", "json"]
