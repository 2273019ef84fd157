# syntax=docker/dockerfile:1.7
# Enrich images:
#   docker build -t enrich:0.2.0-cpu .                           no torch: the serve-cpu extra (OpenVINO) on python:3.12-slim
#   docker build --build-arg VARIANT=gpu -t enrich:0.2.0-gpu .   torch's CUDA wheels on NVIDIA's CUDA runtime base
#   docker build --target train -t enrich:0.2.0-train .          the GPU image plus the trainer (the training Job)
# The CPU image serves a bundle's OpenVINO export (`enrich export BUNDLE`, where torch is installed, writes it;
# a baked bundle gets it at build time). The model bundle is mounted at /models/bundle (the default), or baked in with a build argument that takes
# anything `enrich fetch` does (hub id with @revision, https:// archive, a path under bundles/ in the build
# context); docker caches that step, so name a fixed revision or archive:
#   docker build --build-arg MODEL_SOURCE=hf://acme/enrich-bundle@v3 -t enrich:0.2.0-cpu-acme .
# Every image runs the README's console script: ENTRYPOINT enrich, CMD serve (`docker run IMAGE fetch ...`,
# `docker run IMAGE info /models/bundle` work too). HEALTHCHECK is `enrich health` on grpc.health.v1.

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1

# ---- the project as a wheel (pure Python: no compiler) -------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clients/python/enrich clients/python/enrich
COPY clients/python/enrich_client clients/python/enrich_client
COPY clients/python/enrich_contract clients/python/enrich_contract
COPY model model
COPY datatools datatools
COPY server server
COPY trainer trainer
COPY cli cli
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- bases: python and the unprivileged user the images run as -------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu-base
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /tmp enrich

FROM ${CUDA_IMAGE} AS gpu-base
# The base image's tag pins the distribution; its security updates should land, so apt versions float.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3.12 /usr/local/bin/python \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /tmp enrich

# ---- torch, first and in its own layer: a source change does not download it again ------------------------
# CPU: only to fetch and export a baked bundle (the `bundle` stage, not shipped); GPU: what serves.
FROM cpu-base AS cpu-torch
ARG TORCH_VERSION
ARG TORCHVISION_VERSION
ENV PATH=/opt/enrich/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1
# torch's CPU index: a few hundred MB, not the multi-GB CUDA build PyPI serves on Linux.
RUN python -m venv /opt/enrich \
    && pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

FROM gpu-base AS gpu-torch
ARG TORCH_VERSION
ARG TORCHVISION_VERSION
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu128
ENV PATH=/opt/enrich/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/enrich \
    && pip install --no-cache-dir --index-url "${TORCH_CUDA_INDEX}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

# ---- what each variant serves with: serve-cpu (no torch) on CPU, serve (torch) on GPU ----------------------
FROM cpu-base AS cpu-runtime
ENV PATH=/opt/enrich/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/enrich
ENV ENRICH_EXTRA=serve-cpu

FROM gpu-torch AS gpu-runtime
ENV ENRICH_EXTRA=serve

FROM ${VARIANT}-runtime AS venv
ARG EXTRA_PACKAGES=""
COPY --from=wheel /wheels /wheels
# EXTRA_PACKAGES: e.g. "s3fs==2025.9.0" for `enrich fetch s3://...` (gcsfs for gs://, adlfs for az://).
# hadolint ignore=DL3013,SC2086
RUN pip install --no-cache-dir "$(echo /wheels/enrich_service-*.whl)[${ENRICH_EXTRA}]" ${EXTRA_PACKAGES}

# ---- optionally a baked bundle, with its OpenVINO export (made with torch, here, so the image needs none) -----
FROM cpu-torch AS bundle
ARG MODEL_SOURCE=""
ARG EXTRA_PACKAGES=""
COPY --from=wheel /wheels /wheels
# hadolint ignore=DL3013,SC2086
RUN if [ -n "$MODEL_SOURCE" ]; then \
        pip install --no-cache-dir "$(echo /wheels/enrich_service-*.whl)[serve]" ${EXTRA_PACKAGES}; fi
# The build context, for MODEL_SOURCE paths (this stage is not shipped: only /models is).
COPY . /context/
WORKDIR /context
RUN mkdir -p /models \
    && if [ -n "$MODEL_SOURCE" ]; then \
        enrich fetch --quiet "$MODEL_SOURCE" /models/bundle && enrich export /models/bundle; \
    fi \
    && chmod -R a+rX /models

FROM gpu-torch AS train-venv
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir "$(echo /wheels/enrich_service-*.whl)[train]"

# ---- the training image (the chart's Job runs `accelerate launch -m enrich_trainer.train`) ---------------
FROM gpu-base AS train
COPY --from=train-venv /opt/enrich /opt/enrich
ENV PATH=/opt/enrich/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp HF_HOME=/tmp/huggingface MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
ENTRYPOINT ["enrich"]
CMD ["train", "--help"]

# ---- the serving image (the default target): non-root, nothing writable but /tmp and mounted volumes ------
FROM ${VARIANT}-base AS serve
COPY --from=venv /opt/enrich /opt/enrich
COPY --from=bundle /models /models
# HOME=/tmp: a server that has to export the model at start (a GPU image serving --backend openvino) writes it
# to ~/.cache/enrich/exports, never into the read-only bundle; `enrich serve` sets glibc's allocator limits itself.
ENV PATH=/opt/enrich/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp HF_HOME=/tmp/huggingface \
    ENRICH_MODEL=/models/bundle ENRICH_HEALTH_PORT=50052 ENRICH_LOG_FORMAT=json
USER 10001:10001
EXPOSE 50051 50052 8080 9464
# start-period: loading and warming the model come before SERVING (on GPUs, torch.compile when asked).
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 CMD ["enrich", "health"]
ENTRYPOINT ["enrich"]
CMD ["serve"]
