# syntax=docker/dockerfile:1
#
# geoservice: API (`geoservice api`), Celery worker (`geoservice worker`) and migrations
# (`geoservice migrate`) all run from this one image; docker-compose.yml picks the command.
#
# Every dependency (shapely, pyogrio, pyproj, psycopg-binary, numpy, pandas, ...) ships a
# manylinux wheel with its native libraries (GEOS, GDAL, PROJ, libpq) bundled, so no apt
# packages or compilers are needed on the slim base.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, in a layer of their own that is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# Then the project itself (deps are already satisfied, so this only builds and installs it).
COPY . .
RUN pip install . \
    && geoservice --help > /dev/null

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 geoservice \
    && useradd --system --uid 10001 --gid geoservice --create-home --home-dir /home/geoservice \
        --shell /usr/sbin/nologin geoservice

COPY --from=build /opt/venv /opt/venv

# The source tree (minus what .dockerignore drops) stays in /app, owned by root and read-only to the
# app user: `geoservice migrate` finds migrations/ (and alembic.ini, if any) relative to it.
WORKDIR /app
COPY . .

USER geoservice:geoservice

EXPOSE 8000

CMD ["geoservice", "api", "--host", "0.0.0.0", "--port", "8000"]
