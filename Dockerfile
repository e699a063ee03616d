# The turnout gateway. It talks to vLLM over HTTP, so the image needs no CUDA: CPU torch only
# (torch is a package dependency for the embedded engine, unused when every tier is remote).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY . /app
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu . \
    && useradd --create-home turnout
USER turnout

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
ENTRYPOINT ["turnout"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
