# Countersign service image: the API, the retention worker and the CLI.
FROM python:3.11-slim
# libsndfile: the FLAC codec (soundfile) links against it; IPA Gothic: the Japanese font the evidence
# bundle's PDF report embeds. No PortAudio: the image runs no recorder.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libsndfile1 fonts-ipafont-gothic \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/countersign countersign \
    && install -d -o countersign -m 0700 /var/lib/countersign
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY client ./client
COPY consent ./consent
COPY countersign ./countersign
COPY evidence ./evidence
COPY recorder ./recorder
COPY retention ./retention
# The service, the retention job and the client CLI (an operator runs `countersign admin` in it).
RUN pip install --no-cache-dir '.[server,client]'
USER countersign
ENV COUNTERSIGN_DATA_DIR=/var/lib/countersign
ENTRYPOINT ["countersign"]
CMD ["--help"]
