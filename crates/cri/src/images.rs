//! CRI's ImageService on the engine's.

use std::collections::HashMap;

use k8s_cri::v1 as pb;
use pb::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use crate::convert::image;
use crate::{status, Cri, Engine};

type Reply<T> = Result<Response<T>, Status>;

fn reference(spec: Option<pb::ImageSpec>) -> Result<String, Status> {
    match spec {
        Some(s) if !s.image.is_empty() => Ok(s.image),
        _ => Err(status::missing("image.image")),
    }
}

#[tonic::async_trait]
impl<E: Engine> ImageService for Cri<E> {
    async fn list_images(
        &self,
        r: Request<pb::ListImagesRequest>,
    ) -> Reply<pb::ListImagesResponse> {
        let filter = r
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|i| !i.is_empty());
        let list = self.call(move |e| e.list_images(filter.as_deref())).await?;
        Ok(Response::new(pb::ListImagesResponse {
            images: list.iter().map(image::image).collect(),
        }))
    }

    async fn image_status(
        &self,
        r: Request<pb::ImageStatusRequest>,
    ) -> Reply<pb::ImageStatusResponse> {
        let r = r.into_inner();
        let name = reference(r.image)?;
        let found = self.call(move |e| e.image_status(&name)).await?;
        let info = match (&found, r.verbose) {
            (Some(i), true) => HashMap::from([(
                "info".to_string(),
                serde_json::json!({"id": i.id, "repoTags": i.repo_tags, "size": i.size})
                    .to_string(),
            )]),
            _ => HashMap::new(),
        };
        Ok(Response::new(pb::ImageStatusResponse {
            image: found.as_ref().map(image::image),
            info,
        }))
    }

    async fn pull_image(&self, r: Request<pb::PullImageRequest>) -> Reply<pb::PullImageResponse> {
        let r = r.into_inner();
        let name = reference(r.image)?;
        let auth = r.auth.map(image::auth);
        let id = self
            .call(move |e| e.pull_image(&name, auth.as_ref()))
            .await?;
        Ok(Response::new(pb::PullImageResponse { image_ref: id }))
    }

    async fn remove_image(
        &self,
        r: Request<pb::RemoveImageRequest>,
    ) -> Reply<pb::RemoveImageResponse> {
        let name = reference(r.into_inner().image)?;
        self.call(move |e| e.remove_image(&name)).await?;
        Ok(Response::new(pb::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<pb::ImageFsInfoRequest>,
    ) -> Reply<pb::ImageFsInfoResponse> {
        let usage = self.call(|e| e.image_fs_info()).await?;
        Ok(Response::new(pb::ImageFsInfoResponse {
            image_filesystems: usage.iter().map(image::fs_usage).collect(),
            container_filesystems: Vec::new(),
        }))
    }
}
