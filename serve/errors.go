package serve

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/flywheel-dev/flywheel"
)

// statusOf maps error codes to HTTP statuses: the one place it is done.
var statusOf = map[string]int{
	flywheel.EINVALID:        http.StatusBadRequest,
	flywheel.EUNAUTHORIZED:   http.StatusUnauthorized,
	flywheel.EFORBIDDEN:      http.StatusForbidden,
	flywheel.ENOTFOUND:       http.StatusNotFound,
	flywheel.ECONFLICT:       http.StatusConflict,
	flywheel.ETOOLARGE:       http.StatusRequestEntityTooLarge,
	flywheel.ERATELIMITED:    http.StatusTooManyRequests,
	flywheel.EUNSUPPORTED:    http.StatusUnsupportedMediaType,
	flywheel.EINTERNAL:       http.StatusInternalServerError,
	flywheel.EUNAVAILABLE:    http.StatusServiceUnavailable,
	flywheel.ESPOOLFULL:      http.StatusServiceUnavailable,
	flywheel.ENOTIMPLEMENTED: http.StatusNotImplemented,
}

// retryAfter is implemented by errors that tell the client when to try
// again: writeError answers them with a Retry-After header (whole seconds).
type retryAfter interface{ RetryAfter() time.Duration }

// errorBody is the body of an answer of err.
func errorBody(err error) ErrorResponse {
	return ErrorResponse{Error: ErrorDetail{Code: flywheel.ErrorCode(err), Message: flywheel.ErrorMessage(err)}}
}

// errorCodeKey is where writeError leaves the code of the error it wrote,
// for the observe middleware to count.
const errorCodeKey = "flywheel.error_code"

// handle adapts a handler that returns its error: the error is answered
// by writeError, the one place errors become statuses and bodies.
func handle(h func(c *gin.Context) error) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := h(c); err != nil {
			writeError(c, err)
		}
	}
}

// writeError writes err as {"error": {"code", "message"}} with its status.
// The observe middleware counts every error by code and logs the cause of
// every 5xx answer (the client sees only its message).
func writeError(c *gin.Context, err error) {
	code := flywheel.ErrorCode(err)
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	c.Set(errorCodeKey, code)
	if status >= 500 {
		_ = c.Error(err)
	}
	var ra retryAfter
	if errors.As(err, &ra) && ra.RetryAfter() > 0 {
		c.Header("Retry-After", strconv.Itoa(int(math.Ceil(ra.RetryAfter().Seconds()))))
	}
	c.JSON(status, errorBody(err))
}
