# incidentbot: one process per container; scale with replicas (see README "Deploying").
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PORT=3000 SERVER_THREADS=16 \
    DATABASE_URL=sqlite:////data/incidentbot.db
WORKDIR /app
COPY pyproject.toml README.md ./
COPY incidentbot ./incidentbot
COPY app.py ./
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 bot \
    && mkdir /data && chown bot /data
# SQLite's file lives here; with PostgreSQL (DATABASE_URL) the volume stays empty
VOLUME /data
USER bot
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import os, sys, urllib.request; \
url = 'http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'); \
sys.exit(urllib.request.urlopen(url, timeout=2).status != 200)"
CMD ["python", "app.py"]
