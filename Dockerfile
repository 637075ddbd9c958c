# incidentbot: one process per container; scale with replicas (see README "Deploying").
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PORT=3000 SERVER_THREADS=8
WORKDIR /app
COPY pyproject.toml README.md ./
COPY incidentbot ./incidentbot
COPY app.py ./
RUN pip install --no-cache-dir . && useradd --system --uid 10001 bot
USER bot
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=2).status != 200)"
CMD ["python", "app.py"]
