package serve

import _ "embed"

// openAPI is the OpenAPI 3 document of this API, served at /openapi.json.
//
//go:embed openapi.json
var openAPI []byte
