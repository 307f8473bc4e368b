# DPS node image: one image for every role, chosen at run time with DPS_APP (see README).
FROM python:3.12-slim

WORKDIR /srv/dps
COPY pyproject.toml README.md ring.toml ./
COPY app ./app
COPY ws_gateway ./ws_gateway
COPY topic_server ./topic_server
RUN pip install --no-cache-dir . && useradd --system dps
USER dps

# Inside a container the node must listen beyond loopback, which requires a cluster secret.
ENV DPS_HOST=0.0.0.0
EXPOSE 4000
CMD ["dps"]
