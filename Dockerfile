# Countersign service image: the API, the retention worker and the CLI.
FROM python:3.11-slim
# PortAudio and libsndfile: the recorder and the FLAC codec (soundfile) link against them.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libportaudio2 libsndfile1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/countersign countersign \
    && install -d -o countersign -m 0700 /var/lib/countersign
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY consent ./consent
COPY countersign ./countersign
COPY evidence ./evidence
COPY recorder ./recorder
COPY retention ./retention
RUN pip install --no-cache-dir .
USER countersign
ENV COUNTERSIGN_DATA_DIR=/var/lib/countersign
ENTRYPOINT ["countersign"]
CMD ["--help"]
