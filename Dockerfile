# The turnout gateway. It talks to vLLM over HTTP, so the image needs no CUDA: CPU torch only, for the
# semantic cache's MiniLM encoder (the `engine` extra); a gateway with an exact-only cache installs `.` alone.
#   docker build -t turnout .      docker run -p 8000:8000 -v $PWD/deploy/turnout.yaml:/etc/turnout/turnout.yaml:ro \
#                                    turnout serve --config /etc/turnout/turnout.yaml
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# Only what the package is built from: local virtualenvs, benchmarks and tests stay out of the image.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY engine ./engine
COPY drafters ./drafters
COPY router_models ./router_models
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu '.[engine]' \
    && useradd --create-home turnout
USER turnout

EXPOSE 8000
# Liveness only: /ready also waits for the upstream model servers (see docs/deploy.md).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
ENTRYPOINT ["turnout"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
