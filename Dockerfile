# A small image that runs backfill: Python slim, git (for git-tags sources and
# the catch-up script), and backfill with the s3 extra (state in object storage).
#
#   docker build -t backfill:0.1.0 .
#   docker run --rm -e DEVGRID_API_KEY -v "$PWD:/work" backfill:0.1.0 run -c configs/shop.toml
FROM python:3.12-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY backfill ./backfill
RUN pip install --no-cache-dir --disable-pip-version-check ".[s3]" \
    && rm -rf /src

# The catch-up script, for schedulers that run the image (configs/catch-up.k8s.yaml).
COPY configs/catch-up.sh /usr/local/share/backfill/catch-up.sh

# Not root; a checkout mounted at /work is read as a safe git directory whoever owns it.
RUN useradd --create-home --uid 10001 backfill \
    && git config --system --add safe.directory '*'
USER backfill
WORKDIR /work
ENTRYPOINT ["backfill"]
CMD ["--help"]
