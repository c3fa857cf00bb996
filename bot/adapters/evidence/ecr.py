"""ECR through the shared boto3 plumbing: an image by tag (DescribeImages, and BatchGetImage for its
manifest's annotations, where commit_from = "image_label" reads the revision) and a repository's tags."""

from __future__ import annotations

import json

from bot.adapters.aws import Caller
from bot.app.evidence import EvidenceError, ImageInfo
from bot.app.ports import PlatformError


class EcrRegistry:
    def __init__(self, aws: Caller, role_arn: str | None = None):
        self.aws, self.role_arn = aws, role_arn

    def _ids(self, account: str | None) -> dict[str, str]:
        return {"registryId": account} if account else {}

    async def image(self, account: str | None, repository: str, tag: str) -> ImageInfo | None:
        try:
            got = await self.aws.call(
                "ecr",
                "batch_get_image",
                self.role_arn,
                repositoryName=repository,
                imageIds=[{"imageTag": tag}],
                acceptedMediaTypes=[
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                ],
                **self._ids(account),
            )
        except PlatformError as exc:
            if exc.code == "RepositoryNotFoundException":
                return None
            raise EvidenceError(
                "ecr", str(exc), transient=exc.code in (None, "ThrottlingException")
            ) from None
        images = got.get("images") or []
        if not images:
            return None
        try:
            manifest = json.loads(images[0].get("imageManifest") or "{}")
        except ValueError:
            manifest = {}
        labels = manifest.get("annotations") or {} if isinstance(manifest, dict) else {}
        return ImageInfo(tag, {str(k): str(v) for k, v in labels.items()})

    async def tags(self, account: str | None, repository: str) -> list[str] | None:
        """The repository's tags (None: there is no such repository)."""
        tags: list[str] = []
        token = None
        for _ in range(10):  # 1000 images at most: enough to suggest the nearest
            params = {"repositoryName": repository, "maxResults": 100, **self._ids(account)}
            if token:
                params["nextToken"] = token
            try:
                page = await self.aws.call("ecr", "describe_images", self.role_arn, **params)
            except PlatformError as exc:
                if exc.code == "RepositoryNotFoundException":
                    return None
                raise EvidenceError("ecr", str(exc), transient=True) from None
            tags += [t for d in page.get("imageDetails", []) for t in d.get("imageTags") or []]
            token = page.get("nextToken")
            if not token:
                break
        return tags
