FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY core core
COPY storage storage
COPY gateways gateways
COPY ussd ussd
COPY bot bot
COPY whatsapp whatsapp
COPY web web
COPY sandbox sandbox
RUN pip install --no-cache-dir .
RUN useradd --create-home lipameter
USER lipameter
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"
# Configuration comes from the environment (see README); `serve` refuses to start without it.
# compose.yaml runs `lipameter migrate` once and `serve` / `worker` as separate services instead.
CMD ["sh", "-c", "lipameter migrate && lipameter serve --host 0.0.0.0 --port 8000"]
