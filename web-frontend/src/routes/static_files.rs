//! `GET /static/style.css`: the one stylesheet, compiled into the binary.

use actix_web::HttpResponse;
use actix_web::http::header;

const STYLE: &str = include_str!("../../static/style.css");

pub(crate) async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/css; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLE)
}
