//! The API contract: an OpenAPI 3.1 document of every route, request and response body, error
//! code and security scheme (`shared/openapi.json`), served at `GET /v1/openapi.json`. Tests
//! compare its paths with the template's and the dev host's routes and validate responses
//! against it; `infra/contract` fuzzes the dev host with it (schemathesis).

pub const DOCUMENT: &str = include_str!("../openapi.json");

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_openapi_3_1_json() {
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"].as_object().unwrap().len() > 30);
    }
}
