# qocr's image: every role of the deployment (worker, beat, migrations, Flower, emulator)
# runs from it with a different command; see docker-compose.yml.
#
#   docker build -t qocr:local .
#
# Configuration comes only from the environment (DASHSCOPE_API_KEY, QOCR_*, AWS_*) and the
# schedules file named by QOCR_CONFIG; nothing secret is baked in (.dockerignore keeps .env
# and qocr.toml out of the build context).

FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir --disable-pip-version-check build==1.* \
    && python -m build --wheel --outdir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# tzdata: schedules read cron times in IANA time zones. libgl1 and libglib2.0-0: OpenCV,
# which RapidOCR (the 'local' extra, the emulator's recognizer) imports.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tzdata libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN wheel="$(ls /wheels/qocr-*.whl)" \
    && pip install "${wheel}[local]" "flower>=2.0,<3" \
    && rm -rf /wheels
RUN useradd --system --create-home --uid 10001 qocr
USER qocr
WORKDIR /home/qocr
CMD ["qocr", "--help"]
