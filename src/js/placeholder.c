/* placeholder until the subsystem lands */
typedef int stratd_js_placeholder;
