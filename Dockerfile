# Cloud Run image: CPU-only torch from PyTorch's CPU wheel index (about 1.5 GB smaller than the
# CUDA build that PyPI serves), then the rest of requirements.txt. Not built in this repository's
# CI (no Docker engine on its machines); see README, "Deploying".

# The web page's Firebase sign-in bundle (api/web/dist/firebase.js), built with esbuild from the
# npm packages in package-lock.json; only the bundle leaves this stage.
FROM node:20-slim AS web
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY api/web/ api/web/
COPY scripts/build-web scripts/
RUN scripts/build-web

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PORT=8080 BRANET_DATA_DIR=/tmp/branet
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir torch==2.13.0 torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cpu \
 && grep -v -E '^(torch|torchvision)[=<>]' requirements.txt > requirements-service.txt \
 && pip install --no-cache-dir -r requirements-service.txt

COPY api/ api/
COPY --from=web /build/api/web/dist/ api/web/dist/
COPY ml/ ml/
COPY weights/ weights/
COPY gunicorn.conf.py .

RUN useradd --create-home branet
USER branet
CMD ["gunicorn", "-c", "gunicorn.conf.py", "api:create_app()"]
