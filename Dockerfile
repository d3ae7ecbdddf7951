# labelagent: API + in-process worker. SQLite in /data by default; set LABELAGENT_DATABASE_URL for PostgreSQL.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OPENBLAS_NUM_THREADS=1 \
    LABELAGENT_DATABASE_URL=sqlite:////data/labelagent.db

WORKDIR /app
COPY pyproject.toml README.md LICENSE alembic.ini ./
COPY agent ./agent
COPY tools ./tools
COPY policies ./policies
COPY service ./service
RUN pip install '.[brokers]' && useradd --create-home --uid 10001 labelagent && mkdir /data && chown labelagent /data

USER labelagent
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/health'); sys.exit(0)"
CMD ["labelagent", "serve", "--host", "0.0.0.0", "--port", "8000"]
