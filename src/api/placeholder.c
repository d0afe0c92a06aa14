/* placeholder until the subsystem lands */
typedef int stratd_api_placeholder;
