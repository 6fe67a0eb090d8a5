# Cloud Run image: CPU-only torch from PyTorch's CPU wheel index (about 1.5 GB smaller than the
# CUDA build that PyPI serves), then the rest of requirements.txt. Not built in this repository's
# CI (no Docker engine on its machines); see README, "Deploying".
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PORT=8080 BRANET_DATA_DIR=/tmp/branet
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir torch==2.13.0 torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cpu \
 && grep -v -E '^(torch|torchvision)[=<>]' requirements.txt > requirements-service.txt \
 && pip install --no-cache-dir -r requirements-service.txt

COPY api/ api/
COPY ml/ ml/
COPY weights/ weights/
COPY gunicorn.conf.py .

RUN useradd --create-home branet
USER branet
CMD ["gunicorn", "-c", "gunicorn.conf.py", "api:create_app()"]
