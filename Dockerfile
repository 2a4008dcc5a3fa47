# agent-sessions: the service with Debian's Chromium for the `browser` computer.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CHROMIUM_PATH=/usr/bin/chromium \
    DATABASE_URL=sqlite+aiosqlite:////data/agent_sessions.db

# Debian's Chromium, not Playwright's download: one browser build, updated with the OS.
# fonts-liberation gives pages readable text in screenshots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium fonts-liberation \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/agent-sessions
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
RUN pip install .

RUN useradd --create-home --uid 10001 agent \
    && mkdir -p /data \
    && chown agent:agent /data
USER agent
VOLUME ["/data"]

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# Migrations run at start; without API_KEYS the service refuses this public bind.
CMD ["agent-sessions", "serve", "--host", "0.0.0.0", "--port", "8000"]
