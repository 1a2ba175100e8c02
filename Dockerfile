# agenthost server image: `docker build -t agenthost .`, then
#   docker run -p 8000:8000 agenthost                       # demo agent, SQLite, simulated LLM
#   docker run -p 8000:8000 -e AGENTHOST_STORE=redis://redis:6379/0 -e AGENTHOST_AUTH=keys \
#     agenthost serve mypkg.bot:agent                       # keys: agenthost keys create
# Your agent: build FROM this image and `pip install` your package into /opt/venv.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: install agenthost and its dependencies into a virtualenv ------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# Only what the package needs: tests, docs and deploy/ stay out of the image.
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/venv/bin/pip install .

# -- runtime: the virtualenv on a clean slim image, as a non-root user ----------------------
FROM ${PYTHON_IMAGE} AS runtime
# A numeric UID, so Kubernetes' runAsNonRoot can verify it (deploy/kubernetes uses 10001).
RUN groupadd --system --gid 10001 agenthost \
    && useradd --system --uid 10001 --gid agenthost --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin agenthost \
    && mkdir /data && chown agenthost:agenthost /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AGENTHOST_HOST=0.0.0.0 \
    AGENTHOST_PORT=8000
# The default SQLite store (./agenthost.db) lands here; on Kubernetes the root filesystem
# is read-only and the store is Redis.
WORKDIR /data
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["agenthost"]
CMD ["serve"]
