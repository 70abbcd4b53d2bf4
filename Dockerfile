# Ebb's daemons (ebb-scheduler, ebb-autoscaler) and kubectl-ebb in one small image.
# Build: docker build -t ebb:0.1.0 .   Run as a non-root user with a read-only root.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY ebb ebb
COPY extender extender
COPY autoscaler autoscaler
COPY kubectl_ebb kubectl_ebb
RUN python -m venv /opt/ebb \
 && /opt/ebb/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/ebb/bin/pip install --no-cache-dir -c constraints.txt . \
 && find /opt/ebb -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11-slim
COPY --from=build /opt/ebb /opt/ebb
ENV PATH=/opt/ebb/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["ebb-scheduler"]
