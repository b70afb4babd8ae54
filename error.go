package flywheel

import (
	"errors"
	"fmt"
)

// Error codes. They are part of the HTTP API: serve maps each one to a
// status in exactly one place.
const (
	EINVALID        = "invalid_argument"
	EUNAUTHORIZED   = "unauthenticated"
	EFORBIDDEN      = "permission_denied"
	ENOTFOUND       = "not_found"
	ECONFLICT       = "conflict"
	ETOOLARGE       = "too_large"
	ERATELIMITED    = "rate_limited"
	EUNSUPPORTED    = "unsupported_media_type"
	EINTERNAL       = "internal"
	EUNAVAILABLE    = "unavailable"
	ESPOOLFULL      = "spool_full" // the server's event spool is at its cap or its disk is full: retry later
	ENOTIMPLEMENTED = "not_implemented"
)

// Error is an error with a code a client can act on and a message a person
// can read. Wrap it with fmt.Errorf("...: %w", err) freely: ErrorCode and
// ErrorMessage find it through the chain.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("flywheel error: code=%s message=%s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other non-nil error and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the message of the first *Error in err's chain, or a
// generic message for any other error, so that internal details never reach
// a client.
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
